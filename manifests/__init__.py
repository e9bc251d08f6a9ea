"""Locks of published releases: in a wheel they are the package data `us4.manifests`."""
