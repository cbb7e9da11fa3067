"""The built-in model families, one module each (the contract: dlx/family.py). A module here
defines one `Family` subclass, its typed schema, and `build`; it imports no TensorFlow until a
model is built, so its checks run before TensorFlow loads. The Keras code lives in dlx/models/."""
