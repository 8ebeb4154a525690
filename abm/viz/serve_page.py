"""The page `abm serve` hands to ``solara run`` (configuration from the environment, see :mod:`abm.viz.app`)."""

import os
import warnings

from abm.viz.app import page_component

if os.environ.get("ABM_SERVE_LOOPBACK") == "1":
    # Solara warns on every page load from 127.0.0.1 over http that it cannot set a samesite=none cookie and falls
    # back to samesite=lax. That cookie only matters for a page embedded in an iframe on another site; a page served
    # on the loopback interface is not, and lax is the right setting. Served on another address, the warning stays.
    warnings.filterwarnings("ignore", message="Cookies with samesite=none require https", category=UserWarning)

Page = page_component()
