"""A toy venue, the whole of it in this folder: proof that adding a venue to
capture is one folder plus one registry call (``capture.venues.register``).

Its protocol is invented and tiny, JSON text frames::

    -> {"op":"sub","id":1,"ch":"quotes","symbols":["A","B"]}
    <- {"op":"ack","id":1,"ch":"quotes","sym":"A"}         one per symbol
    <- {"op":"err","id":1,"sym":"BAD","msg":"unknown symbol"}
    -> {"op":"unsub","ch":"quotes","symbols":["A"]}
    <- {"ch":"snapshot","sym":"A","seq":10,"px":"1.00"}    restarts A's numbering
    <- {"ch":"quotes","sym":"A","seq":11,"px":"1.01"}      numbered per symbol
    <- {"op":"hb"}                                          heartbeat
"""
from toyvenue.protocol import Toy

__all__ = ["Toy"]
