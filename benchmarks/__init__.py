"""argen's measurements, apart from the library: every number in the README and docs/ comes from one of these.

    python -m benchmarks                      # list them
    python -m benchmarks NAME [options]       # run one; JSON with the machine's facts on stdout / --out
    python -m benchmarks NAME --smoke         # the same code on tiny models in seconds (the test suite runs
                                              # every benchmark's smoke mode, so none can rot)

A benchmark is a module of this package with `add_args(parser)`, `run(args) -> dict` and `SMOKE` (the
arguments of its smoke mode); the runner (`benchmarks.runner`) finds them, so adding one is adding a file.
"""
