pytest_plugins = ["tidemark_rig.fixtures"]
