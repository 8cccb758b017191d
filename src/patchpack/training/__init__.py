"""The training wing: the framework-free loader, the Keras adapter, the models, train and evaluate.

Keras is imported by the adapter, the models, BatchNorm re-estimation (``batchnorm``), ``device`` and
the stages here, never by the loader or by ``compare`` (which only reads metrics files). It may use
the dataset wing.
"""
