"""Networks whose work depends on the input: SkipNet gates (:mod:`.skipnet`, ``host dynamic``), growing networks with
internal classifiers and the SDN loss (:mod:`.grow`), early exit (:mod:`.exits`, ``host exits``); each deploys as a
staged model that the device runs one input at a time (:mod:`edgeshrink.device.dynamic`)."""
