"""Site agents: the processes at each compute centre that run what gpupool placed there.

An agent talks to ``gpupool serve`` over HTTP as a user with role ``agent`` for one
site; it never touches the database. It launches starts through an ``Executor``
(``executor.py``) and reports what really happened back to the server.
"""
