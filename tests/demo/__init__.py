"""Tests of the demo router (``routemeter demo``)."""
