"""Allocation policies: a Snapshot in, an Allocation out. Pure: no I/O, no database, no SimPy.

Heavy solver imports (ortools) happen inside the policy modules that need them,
so importing this package stays cheap.
"""

from gpupool.policies.base import Policy

__all__ = ["Policy"]
