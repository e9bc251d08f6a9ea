"""Recipes shipped with us4: in a wheel they are the package data `us4.pipelines` (`us4 build pocus` finds them by name)."""
