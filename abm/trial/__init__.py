"""Virtual clinical trials: cohorts of virtual patients (:mod:`~abm.trial.cohort`), RECIST 1.1 at scheduled visits
(:mod:`~abm.trial.recist`), the trial definition (:mod:`~abm.trial.spec`), runs on the sweep machinery
(:mod:`~abm.trial.runner`), read-outs with intervals and paired comparisons (:mod:`~abm.trial.analysis`), the
clinic's figures (:mod:`~abm.trial.figures`) and calibration (:mod:`~abm.trial.calibrate`). See docs/trials.md."""
