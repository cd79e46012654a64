"""The distributed deployment: FAB roles, the CeleryExecutor stack on one machine, and the
checks that keep ``docker-compose.yaml`` and the ``Dockerfile`` consistent with the project."""
