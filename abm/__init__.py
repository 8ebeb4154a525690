"""abm: a lattice simulator of tumour-immune dynamics under IL-2 and IFN-alpha immunotherapy.

The public API is short::

    import abm
    sc = abm.Scenario.load("high_dose_il2")        # a shipped scenario, or a path to a TOML file
    model = abm.Model(sc, seed=1)                   # a mesa.Model; model.step() advances 10 min
    abm.run(sc, out="run.h5", seed=1)               # a whole run written to HDF5
    run = abm.load("run.h5")                        # read it back (abm.io.Run)
"""

from abm import threads as _threads

_threads.configure()  # before Numba starts its threads: passive OpenMP wait, the usable CPUs (abm/threads.py)

from abm.errors import ParameterError, UsageError  # noqa: E402
from abm.params import Params  # noqa: E402
from abm.provenance import abm_version  # noqa: E402
from abm.scenario import Scenario  # noqa: E402

__version__ = abm_version()


def __getattr__(name: str):
    # heavy pieces (Numba kernels, h5py) load on first use so that `abm --help` and scenario checks stay fast
    if name == "Model":
        from abm.model import Model

        return Model
    if name in ("run", "RunResult", "RunInterrupted", "Simulation"):
        from abm import simulation

        return getattr(simulation, name)
    if name == "load":
        from abm.io import load_run

        return load_run
    raise AttributeError(f"module 'abm' has no attribute {name!r}")


__all__ = ["Model", "ParameterError", "Params", "Scenario", "UsageError", "__version__", "load", "run"]
