"""Topic discovery: which themes does a corpus hold, and how well does an embedding separate them?

    adaptlab topics examples/rotten_tomatoes_small.yaml                       # the base model (MiniLM)
    adaptlab topics reviews.csv --text review --reducer pca --output runs/topics/reviews
    adaptlab topics examples/rotten_tomatoes_small.yaml --embedding runs/<ladder>/<embedding rung>

The steps (:func:`adaptlab.topics.pipeline.discover`): read the corpus (:mod:`.corpus`), embed it with the base
model or a trained embedding rung (:mod:`.embedders`), reduce, cluster and describe it with BERTopic (:mod:`.model`),
score the topics' terms on the corpus (:mod:`.quality`: NPMI coherence and topic diversity) and write
``topics.json``, ``documents.jsonl`` and ``topics.html`` (:mod:`.outputs`, :mod:`.page`).
"""
