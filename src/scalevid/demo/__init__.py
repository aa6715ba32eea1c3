"""The end-to-end demo: the design of labelled videos whose label needs the whole video
(`synthetic`), their drawing and encoding (`render`), the dataset folder (`dataset`), an
order-blind ceiling (`ceiling`) and the pipeline that runs extract -> train -> eval -> report
(`pipeline`)."""
