"""The cloud: accounts, workspaces, projects, environments and services around the engines.

The engines know nothing of this package; it composes them through `runtime.ServiceRuntime`
and adds tenancy and auth. `control.open_control_plane()` opens the state, `api.create_admin_app()`
serves the admin HTTP API (docs/admin-api.md) over it.
"""
