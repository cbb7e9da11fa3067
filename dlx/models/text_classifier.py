"""Text classification from word order (the book's IMDB sentiment LSTM):

    word ids -> embedding (id 0 = padding, masked) -> [bidirectional] lstm | gru | rnn -> softmax

Reads text datasets (imdb, reuters, text_folder) as padded word-id sequences; two-class
problems also report ROC AUC."""

import keras
from keras import layers

from dlx.models.layers import maybe_dropout, softmax_head
from dlx.models.recurrent import recurrent


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    ids = keras.Input(spec.input_shape, dtype="int32", name="words")
    # feature_names: <pad>, <unk>, then the vocabulary, one name per id
    x = layers.Embedding(len(spec.feature_names), cfg.embedding, mask_zero=True, name="embedding")(ids)
    rnn = recurrent(cfg.cell, cfg.hidden, reg, name="rnn")
    x = layers.Bidirectional(rnn, name="birnn")(x) if cfg.bidirectional else rnn(x)
    x = maybe_dropout(x, reg)
    return keras.Model(ids, softmax_head(x, spec, reg), name="text_classifier")
