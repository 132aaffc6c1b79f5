"""Training: abstract state init, one jitted step, Orbax checkpoints, the loop.

``jaxir.train`` is both this package and the entry point ``jaxir.train(config, workdir)``
(see :func:`jaxir.train.loop.train`): calling the package calls the loop, so the name
means the same thing whichever was imported first.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from jaxir.train.loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
