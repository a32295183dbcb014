"""SyncNet's fixed numbers, importable without PyTorch (media decoding and the weight-free engine need them)."""

#: Video frame rate the network was trained on; one window step is one frame.
FPS = 25
#: Audio sample rate of the MFCC front end.
SAMPLE_RATE = 16000
#: Video frames per lip window (200 ms).
WINDOW_FRAMES = 5
#: MFCC frames (10 ms hop) per video frame (40 ms).
MFCC_PER_FRAME = 4
#: MFCC columns per audio window: 5 frames x 4 + 0 = 20 (200 ms plus the 15 ms analysis tail).
MFCC_WINDOW = WINDOW_FRAMES * MFCC_PER_FRAME
#: Audio samples per video frame at 16 kHz and 25 fps.
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
#: Side of the square face crop the lip stream expects.
CROP_SIZE = 224
#: The lip stream only reduces to 1x1 for square inputs within this range (224 is intended).
CROP_SIZE_RANGE = (211, 242)
#: Number of MFCC coefficients per column.
N_MFCC = 13
#: Size of both embeddings.
EMBED_DIM = 1024
