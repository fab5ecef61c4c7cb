"""The host side of ymir-exc: what the YMIR platform does around an executor, made local.

``datasets`` reads a dataset (the bundled sample, a YMIR ``in/`` folder, ...), ``workspace``
prepares ``W/in`` and ``W/out``, ``runtime`` runs the executor, ``collect`` checks and collects its
outputs, ``models`` stores model packages. The executor-side SDK never imports this package.
"""
