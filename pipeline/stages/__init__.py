"""Stages: thin wiring of config -> data -> model -> engine. Each ``run(cfg, ...)`` returns a summary dict."""
