"""What the stages tests share with tests/cli/test_stages_cli.py: the prompt they run."""

PROMPT = "The Eiffel Tower is in the capital of France is"
