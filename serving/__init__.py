"""The Ray Serve application over forge_ray (thin): deployments and the swap watcher."""
