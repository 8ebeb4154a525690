"""The page `abm serve` hands to ``solara run`` (configuration from the environment, see :mod:`abm.viz.app`)."""

from abm.viz.app import page_component

Page = page_component()
