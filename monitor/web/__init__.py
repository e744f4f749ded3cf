"""The HTTP API and the Prometheus exposition; depends on the daemon only through :class:`monitor.web.view.DaemonView`."""
