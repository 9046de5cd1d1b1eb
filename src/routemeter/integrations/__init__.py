"""Integrations that record routemeter's schema from the events of routers people already run.

Each integration is a submodule that imports its framework on import, so importing
``routemeter`` never pulls them in: ``from routemeter.integrations.litellm import
RoutemeterCallback`` needs ``litellm`` installed (``pip install 'routemeter[litellm]'``).
"""
