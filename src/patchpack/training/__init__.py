"""The training wing: the framework-free loader, the Keras adapter, the models, train and evaluate.

Keras is imported by the adapter, the models and the stages here, never by the loader. It may use the
dataset wing.
"""
