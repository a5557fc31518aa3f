"""The neutral base every package may import: errors, URL masking, host-name rules.

It imports nothing of this project (``explorer``, ``launchers``, ``search_spaces``, ``dashboards``)
and no heavy library, so the job, the launchers and the driver can all depend on it.
"""
