"""The fault model: what a faulty replica, a faulty client or the network may do.

A traitor wraps an honest :class:`pbft.replica.Replica` (:mod:`.base`); its
behaviours rewrite what goes in and out (:mod:`.behaviours`, and
:mod:`.byzantine` for a traitor as strong as the model: anything its keys can
sign). :mod:`.clients` holds Byzantine clients, :mod:`.network` partitions,
loss, delay, duplication and reordering, :mod:`.spec` the ``--traitor`` text
form. Depends on :mod:`pbft` only.
"""
