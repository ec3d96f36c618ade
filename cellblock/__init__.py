"""The `cellblock` command (cellblock/cli.py): run, run-server, judge, serve, worker, doctor, setup.

`python -m cellblock` is the same command, for a checkout on PYTHONPATH.
"""
