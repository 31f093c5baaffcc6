"""Problems: the Gaussian-mixture benchmark with exact posteriors (:mod:`.gmm`) and the image
restoration tasks with their classical reconstructions (:mod:`.images`)."""
