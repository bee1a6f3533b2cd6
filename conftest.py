"""Root conftest: the real-server fixtures come from the workspace's pytest plugins."""

pytest_plugins = [
    "zapgate.devservers.pytest_plugin",
    "zapgate.wapi.pytest_plugin",
]
