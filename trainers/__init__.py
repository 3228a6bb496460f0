"""keras_lfr's command-line programs (`python -m trainers.<name>`, or the `keras-lfr-*` scripts).

`train` and `evaluate` are here, each a thin `main` over the functions of
`training` and `evaluating`; the project's own study programs are in
`trainers.studies`. No program imports another.

keras_lfr is imported first, before any module here imports Keras, so that
TensorFlow's C++ start-up log is kept quiet for the programs
(`keras_lfr._quiet`).
"""

import keras_lfr  # noqa: F401
