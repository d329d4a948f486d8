"""Reference photos: image normalisation, face detection backends, FFHQ alignment, face masks."""
