from hypothesis import settings

pytest_plugins = ["tidemark_rig.fixtures"]

# Property tests check correctness, not speed: a per-example deadline only turns a loaded
# 2-core machine into false failures (performance targets live in `tidemark bench`).
settings.register_profile("tidemark", deadline=None)
settings.load_profile("tidemark")
