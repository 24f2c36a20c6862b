"""The platform and its active policy, written for the workload managers sites run.

``kueue``: ResourceFlavors, a Cohort and ClusterQueues (one per domain) and
LocalQueues (one per organisation) for a Kubernetes site, checked against Kueue's
published CRD schemas (``crds/``). ``slurm``: ``sacctmgr`` commands for accounts per
domain and organisation and a QOS per domain. Both are pure: the platform's
description and the policy's parameters in, text out (gpupool.scheduler.exporting
reads them from the database and checks who may ask).
"""
