"""gpupool test suite (a package so tests can import shared builders as tests.<pkg>.builders)."""
