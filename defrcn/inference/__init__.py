"""Running a trained detector: detections over a data set, images to PNG/JSON, MINDIR export,
and the evaluation pictures."""
