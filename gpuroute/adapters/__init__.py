"""Adapters: each turns a RoutingPlan into what one way of starting work needs.

    docker_py    keyword arguments for docker-py's containers.create/run
    docker_cli   argv for `docker run`
    compose      a generated compose file and argv for `docker compose run`
    local        the environment for a subprocess, and torchrun's argv
    engine       a docker-py client with retries, and engine errors made actionable

They build on the core and never the other way round. docker is imported only when used.
"""
