"""Integration tests: routemeter inside the routers people run (LiteLLM) and the examples."""
