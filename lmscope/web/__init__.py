"""``lmscope serve``: a local web workbench over one loaded model and the run folders on disk.

Layout (imports point down): ``runs`` (find and read run folders, serve their files safely), ``features`` (the SAE
feature pages and explanations found there) and ``views`` (a result as the JSON the page draws) only read results;
``jobs`` (one worker thread, a visible queue, progress events, cancel) knows nothing of methods; ``tasks`` (what "Try
it" runs: lens, trace, lesion, neurons, ROME edit) calls the methods, checks every parameter's bounds and writes normal
run folders; ``security`` (token, Host allow-list, same-origin JSON writes, response headers) and ``server`` (uvicorn
with timeouts and a connection cap) know nothing of the rest; ``app`` binds them into the Starlette app. The page itself
is static (``static/``: the page, its sign-in page, their scripts and one style sheet; no build step, no CDN).
"""

from lmscope.web.app import Background, create_app

__all__ = ["Background", "create_app"]
