"""The network: checkpoint layout, and the fast path against the reference layout and the golden embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from syncnet.audio import audio_windows
from syncnet.inference import CropSizeError, check_crop_shape
from syncnet.model import FastSyncNet, SyncNet, build_syncnet, expected_state_shapes
from syncnet.weights import read_state_dict


def test_layout_matches_the_checkpoint(random_weights):
    state = read_state_dict(random_weights)
    expected = expected_state_shapes()
    assert len(expected) == 102
    assert list(state) == list(expected), "same keys in the same order as the reference's S()"
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    n_params = sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith("num_batches_tracked"))
    assert n_params == 13_640_256


def _lip_windows(frames_bgr: np.ndarray, count: int) -> torch.Tensor:
    """Reference input layout: (B, 3, 5, H, W) float, BGR 0-255."""
    f = torch.from_numpy(frames_bgr.astype(np.float32))
    return torch.stack([f[v : v + 5] for v in range(count)]).permute(0, 4, 1, 2, 3).contiguous()


@pytest.fixture(scope="module")
def reference_net(random_weights) -> SyncNet:
    return build_syncnet(read_state_dict(random_weights))


def test_golden_embeddings_identical_inputs(reference_net, golden):
    """Identical inputs (ffmpeg-decoded frames and audio) give the reference's embeddings, both paths."""
    from syncnet.audio import mfcc

    inputs, model_level = golden("example_first25_inputs"), golden("example_model_level")
    lips = _lip_windows(inputs["frames_bgr"], 20)
    feat = mfcc(inputs["audio_int16"])
    # the last column of the short clip is zero-padded, so it differs from the whole clip's
    n = feat.shape[1] - 1
    np.testing.assert_allclose(feat[:, :n], model_level["mfcc"][:, :n], atol=1e-3, rtol=0)
    auds = torch.from_numpy(audio_windows(feat, 0, 20))
    fast = FastSyncNet.from_syncnet(reference_net)
    with torch.inference_mode():
        for net in (reference_net, fast):
            im = net.forward_lip(lips).numpy()
            cc = net.forward_aud(auds).numpy()
            np.testing.assert_allclose(im, model_level["im_feat"][:20], atol=1e-4, rtol=0)
            np.testing.assert_allclose(cc, model_level["cc_feat"][:20], atol=1e-4, rtol=0)
            assert np.abs(im).max() > 0.1, "embeddings must not be trivially small"


def test_fast_path_equals_reference_layout_with_nontrivial_batchnorm():
    """The golden weights have identity BN statistics; random ones prove the folding uses them right."""
    torch.manual_seed(1)
    net = SyncNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    fast = FastSyncNet.from_syncnet(net)
    lips = torch.rand(3, 3, 5, 224, 224) * 255
    auds = torch.randn(3, 1, 13, 20) * 10
    with torch.inference_mode():
        ref_im, ref_cc = net.forward_lip(lips), net.forward_aud(auds)
        np.testing.assert_allclose(fast.forward_lip(lips), ref_im, rtol=1e-4, atol=1e-4 * ref_im.abs().max().item())
        np.testing.assert_allclose(fast.forward_aud(auds), ref_cc, rtol=1e-4, atol=1e-4 * ref_cc.abs().max().item())
        # and the BN statistics matter: with them reset, the output changes
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
        assert not torch.allclose(net.forward_lip(lips), ref_im, rtol=1e-2)


@pytest.mark.parametrize("shape", [(224, 200, 3), (180, 180, 3), (256, 256, 3), (224, 224, 1)])
def test_wrong_crop_shape_is_a_clear_error(shape):
    with pytest.raises(CropSizeError, match="224x224"):
        check_crop_shape(shape)


@pytest.mark.parametrize("side", [211, 224, 242])
def test_accepted_crop_sizes_run(side):
    check_crop_shape((side, side, 3))
    net = FastSyncNet.from_syncnet(SyncNet().eval())
    with torch.inference_mode():
        assert net.forward_lip(torch.rand(1, 3, 5, side, side)).shape == (1, 1024)
