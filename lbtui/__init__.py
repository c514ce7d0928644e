"""lbtui: watch an HTTP load balancer work, and break its backends on purpose."""

__version__ = "0.1.0"
