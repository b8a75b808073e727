"""The exit codes of every engine command and of lenstui's: one meaning per number.

    0 OK           done (a run trained to the end, a launch started, a report written)
    1 FAILED       it ran and failed (a run's traceback is in stdout.log; a launch ended at once)
    2 BAD_INPUT    nothing started: a bad option, config, path or id; the message says which
    3 REFUSED      nothing started: another process runs that experiment, a host refused us or is
                   not set up (no engine: `lenstui sync`), no free GPU
    4 UNREACHABLE  a host could not be reached (lenstui only)

A training run stopped by a signal exits 128 + the signal (143 for SIGTERM, 130 for SIGINT),
as a shell reports it. Torch-free and NumPy-free.
"""

OK, FAILED, BAD_INPUT, REFUSED, UNREACHABLE = 0, 1, 2, 3, 4
