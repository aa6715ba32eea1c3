"""The end-to-end demo: generated labelled videos (`synthetic`), an order-blind ceiling
(`ceiling`) and the pipeline that runs extract -> train -> eval -> report (`pipeline`)."""
