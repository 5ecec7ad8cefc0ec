"""Generative models on the ladder: prompt formatting, scoring, decoding and the `generate`/`inspect-data` commands.

- :mod:`~adaptlab.generation.formatting`: templates, chat templates, few-shot demonstrations, truncation to the token
  budget, and the one encoding every rung shares (prompt ids + answer ids, loss only on the answer).
- :mod:`~adaptlab.generation.lm`: which kind a model is (causal, seq2seq, encoder), loading, answer log-likelihoods
  (constrained choice, reference perplexity) and perplexity on a general text (forgetting).
- :mod:`~adaptlab.generation.decoding`: batched generation (greedy, beam, sampling, stop strings) and the
  step-by-step ``--explain`` view.
- :mod:`~adaptlab.generation.commands`: ``adaptlab generate`` and ``adaptlab inspect-data``.
"""
