"""Real peers (OTLP receiver, Prometheus) that the integration tests export to and scrape from."""
