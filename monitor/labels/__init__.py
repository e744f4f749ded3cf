"""The label stream: decoding label events, the durable join with predictions, and the
performance windows computed when labels mature (see the README's "Labels and performance")."""
