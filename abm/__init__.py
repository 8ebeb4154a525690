"""abm: a lattice simulator of tumour-immune dynamics under IL-2 and IFN-alpha immunotherapy.

The public API is short::

    import abm
    sc = abm.Scenario.load("high_dose_il2")        # a shipped scenario, or a path to a TOML file
    model = abm.Model(sc, seed=1)                   # a mesa.Model; model.step() advances 10 min
    abm.run(sc, out="run.h5", seed=1)               # a whole run written to HDF5
    run = abm.load("run.h5")                        # read it back
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("abm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from abm.params import ParameterError, Params  # noqa: E402
from abm.scenario import Scenario  # noqa: E402


def __getattr__(name: str):
    # heavy pieces (Numba kernels, h5py) load on first use so that `abm --help` and scenario checks stay fast
    if name == "Model":
        from abm.model import Model

        return Model
    if name in ("run", "RunResult"):
        from abm import runner

        return getattr(runner, name)
    if name == "load":
        from abm.runner import load

        return load
    raise AttributeError(f"module 'abm' has no attribute {name!r}")


__all__ = ["Model", "ParameterError", "Params", "Scenario", "__version__", "load", "run"]
