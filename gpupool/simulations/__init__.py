"""SimPy discrete-event simulation of the platform under any Policy.

simpy is imported only inside the engine module, so importing this package is cheap.
"""
