"""The projector's prompt and image token, checked in the config (before anything loads) and against the processor."""

import pytest

from lmscope.data.images import shape_concepts
from lmscope.errors import ConfigError
from lmscope.methods.projector import ProjectorConfig, train_projector
from lmscope.model.vlm import build_llava


@pytest.mark.parametrize("prompt", ["no image token here", "<empty_output><empty_output> A picture of"])
def test_the_prompt_holds_the_image_token_once(prompt):
    with pytest.raises(ConfigError, match="prompt must hold the image token '<empty_output>' exactly once"):
        ProjectorConfig(prompt=prompt)
    assert ProjectorConfig(prompt="w50 a", image_token="w50").image_token == "w50"


def test_a_config_whose_image_token_is_not_the_processors_is_refused_before_training(folders):
    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    with pytest.raises(ConfigError, match="not the processor's 'w50'"):
        train_projector(model, processor, shape_concepts()[:4], ProjectorConfig(image_size=28))
