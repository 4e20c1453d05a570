"""Containers: how an image's config and the user's flags become a process in a VM."""
