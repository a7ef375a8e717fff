"""Official checkpoints -> SegViTForSemanticSegmentation: parity with the official semantics, and errors.

`official_reference.py` restates what the official code computes, directly on a state dict in the official key
layout; a random checkpoint in that layout is converted and both are compared.
"""

import pytest
import torch

from official_reference import (
    make_random_official_shrunk_state_dict,
    make_random_official_state_dict,
    official_forward,
    official_shrunk_forward,
)
from segvit_hf import SegViTForSemanticSegmentation
from segvit_hf.conversion import CheckpointConversionError, convert_official_checkpoint
from segvit_hf.conversion_cli import main
from segvit_testing import TINY_OFFICIAL as TINY
from segvit_testing import predict_scores


def _official_checkpoint(num_stages=3, seed=0, **overrides):
    return make_random_official_state_dict(**{**TINY, **overrides}, num_stages=num_stages, seed=seed)


def _labels(batch, size, num_classes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    labels[:, : size // 4, : size // 3] = 255
    labels[0, -8:, :] = 3  # a class region larger than a patch
    return labels


@pytest.mark.parametrize("out_indices", [[1, 2, 3], [3], [0, 3]])
def test_parity_with_the_official_semantics(out_indices):
    state_dict = _official_checkpoint(num_stages=len(out_indices))
    model = convert_official_checkpoint(
        state_dict, num_attention_heads=4, decoder_num_attention_heads=4, out_indices=out_indices, image_size=64
    )
    assert not model.training
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    labels = _labels(2, 64, TINY["num_classes"])

    expected_pred, expected_loss = official_forward(
        state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=out_indices, labels=labels
    )
    outputs, scores = predict_scores(model, pixel_values, labels=labels)
    torch.testing.assert_close(scores, expected_pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.loss, expected_loss, rtol=1e-4, atol=0)


def test_parity_in_float64_is_tight():
    """Same arithmetic, so in double precision the two agree to rounding, not just to the 1e-4 bar."""
    state_dict = {k: v.double() for k, v in _official_checkpoint(seed=3).items()}
    model = convert_official_checkpoint(
        state_dict, num_attention_heads=4, decoder_num_attention_heads=4, out_indices=[1, 2, 3], image_size=64
    ).double()
    pixel_values = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    labels = _labels(1, 64, TINY["num_classes"])
    expected_pred, expected_loss = official_forward(
        state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=[1, 2, 3], labels=labels
    )
    outputs, scores = predict_scores(model, pixel_values, labels=labels)
    torch.testing.assert_close(scores, expected_pred, atol=1e-10, rtol=0)
    torch.testing.assert_close(outputs.loss, expected_loss, atol=1e-10, rtol=1e-10)


def test_checkpoint_file_with_meta_and_loss_buffer_through_the_cli(tmp_path):
    state_dict = _official_checkpoint(with_loss_buffer=True)
    path = tmp_path / "ade_tiny.pth"
    torch.save({"meta": {"CLASSES": tuple(f"c{i}" for i in range(7)), "iter": 160000}, "state_dict": state_dict}, path)
    main([str(path), str(tmp_path / "converted"), "--num-attention-heads", "4", "--decoder-num-attention-heads", "4",
          "--out-indices", "1", "2", "3", "--image-size", "64"])
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    model = SegViTForSemanticSegmentation.from_pretrained(tmp_path / "converted").eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    expected_pred, _ = official_forward(state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=[1, 2, 3])
    torch.testing.assert_close(predict_scores(model, pixel_values)[1], expected_pred, atol=1e-4, rtol=0)


def test_preset_supplies_architecture_and_labels():
    """A ViT-B-shaped checkpoint with the preset's 150 classes gets the ADE20K names and heads from the preset."""
    state_dict = _official_checkpoint(hidden_size=48, num_heads=4, decoder_dim=24, decoder_num_heads=4, num_classes=150,
                                      crop=512, num_layers=12)
    model = convert_official_checkpoint(state_dict, preset="ade20k-vit-b", num_attention_heads=4, decoder_num_attention_heads=4)
    assert model.config.out_indices == [5, 7, 11]
    assert model.config.id2label[0] == "wall" and model.config.num_labels == 150
    assert model.config.encoder_config.image_size == 512


def test_unknown_keys_are_named():
    state_dict = _official_checkpoint()
    state_dict["decode_head.conv_seg.weight"] = torch.zeros(7, 32, 1, 1)
    with pytest.raises(CheckpointConversionError, match="decode_head.conv_seg.weight"):
        convert_official_checkpoint(state_dict, num_attention_heads=4, decoder_num_attention_heads=4,
                                    out_indices=[1, 2, 3], image_size=64)


def test_missing_keys_are_named():
    state_dict = _official_checkpoint()
    del state_dict["decode_head.decoder_2.layers.1.norm3.bias"]
    with pytest.raises(CheckpointConversionError, match=r"decode_head\.stages\.1\.layers\.1\.mlp_norm\.bias"):
        convert_official_checkpoint(state_dict, num_attention_heads=4, decoder_num_attention_heads=4,
                                    out_indices=[1, 2, 3], image_size=64)


def test_arguments_that_contradict_the_tensors():
    state_dict = _official_checkpoint()
    common = dict(num_attention_heads=4, decoder_num_attention_heads=4)
    with pytest.raises(CheckpointConversionError, match="reads 3 encoder features but 2 out_indices"):
        convert_official_checkpoint(state_dict, out_indices=[2, 3], image_size=64, **common)
    with pytest.raises(CheckpointConversionError, match="image_size 128 does not match"):
        convert_official_checkpoint(state_dict, out_indices=[1, 2, 3], image_size=128, **common)
    with pytest.raises(CheckpointConversionError, match="`out_indices` is needed"):
        convert_official_checkpoint(state_dict, image_size=64, **common)


def test_corrupt_and_foreign_files(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointConversionError, match="Could not read"):
        convert_official_checkpoint(corrupt, preset="ade20k-vit-b")
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointConversionError, match="not an official SegViT checkpoint"):
        convert_official_checkpoint(foreign, preset="ade20k-vit-b")
    with pytest.raises(FileNotFoundError):
        convert_official_checkpoint(tmp_path / "absent.pth", preset="ade20k-vit-b")


def test_pickled_code_is_refused(tmp_path):
    """weights_only loading: a checkpoint carrying arbitrary Python objects is rejected, never executed."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _official_checkpoint(), "meta": {"hook": _Arbitrary()}}, path)
    with pytest.raises(CheckpointConversionError, match="weights_only=True"):
        convert_official_checkpoint(path, num_attention_heads=4, decoder_num_attention_heads=4, out_indices=[1, 2, 3],
                                    image_size=64)


class _Arbitrary:
    pass


# ----- Shrunk SegViT (vit_shrink + TPNATMHead) -----------------------------------------------------------------


def _official_shrunk_checkpoint(seed=0, **overrides):
    return make_random_official_shrunk_state_dict(**{**TINY, "num_layers": 6, **overrides}, seed=seed)


def test_shrunk_parity_with_the_official_semantics():
    state_dict = _official_shrunk_checkpoint(with_loss_buffer=True)
    model = convert_official_checkpoint(
        state_dict, num_attention_heads=4, decoder_num_attention_heads=4, out_indices=[1, 5], image_size=64,
        shrink_index=2,
    )
    assert model.config.query_upsampling and model.config.shrink_index == 2
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    labels = _labels(2, 64, TINY["num_classes"])
    expected_pred, expected_loss = official_shrunk_forward(
        state_dict, pixel_values, num_heads=4, decoder_num_heads=4, out_indices=[1, 5], shrink_index=2, labels=labels
    )
    outputs, scores = predict_scores(model, pixel_values, labels=labels)
    torch.testing.assert_close(scores, expected_pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(outputs.loss, expected_loss, rtol=1e-4, atol=0)


def test_shrunk_checkpoint_needs_the_shrink_index():
    with pytest.raises(CheckpointConversionError, match="Shrunk SegViT checkpoint.*shrink_index"):
        convert_official_checkpoint(_official_shrunk_checkpoint(), num_attention_heads=4, decoder_num_attention_heads=4,
                                    out_indices=[1, 5], image_size=64)


def test_shrunk_preset_reads_labels_and_layout():
    """A ViT-L-shaped (narrow) shrunk PASCAL-Context checkpoint with 59 classes, converted with its preset."""
    state_dict = _official_shrunk_checkpoint(hidden_size=32, num_layers=24, num_classes=59, crop=480,
                                             decoder_dim=16)
    model = convert_official_checkpoint(state_dict, preset="pascal-context-vit-l-shrunk", num_attention_heads=4,
                                        decoder_num_attention_heads=4)
    assert model.config.shrink_index == 8 and model.config.out_indices == [7, 23]
    assert model.config.num_labels == 59 and model.config.id2label[0] == "aeroplane"
    assert model.decode_head.query_upsampler.queries.weight.shape == (30 * 30, 16)


def test_cli_with_a_preset_writes_the_preset_processor(tmp_path):
    from segvit_hf import SegViTImageProcessor

    state_dict = _official_checkpoint(hidden_size=48, num_heads=4, decoder_dim=24, decoder_num_heads=4, num_classes=150,
                                      crop=512, num_layers=12)
    path = tmp_path / "ade.pth"
    torch.save({"state_dict": state_dict}, path)
    main([str(path), str(tmp_path / "out"), "--preset", "ade20k-vit-b", "--num-attention-heads", "4",
          "--decoder-num-attention-heads", "4"])
    processor = SegViTImageProcessor.from_pretrained(tmp_path / "out")
    assert processor.size["shortest_edge"] == 512 and processor.do_reduce_labels


# ----- The segvit-convert command ------------------------------------------------------------------------------


def test_command_is_named_segvit_convert(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: segvit-convert")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{tmp}/absent.pth", "{tmp}/out", "--preset", "ade20k-vit-b"], "no such checkpoint file: {tmp}/absent.pth"),
        (["{tmp}/tiny.pth", "{tmp}/out", "--num-attention-heads", "4"],
         "without --preset, give --decoder-num-attention-heads, --out-indices, --image-size"),
        (["{tmp}/tiny.pth", "{tmp}/tiny.pth", "--preset", "ade20k-vit-b"], "is a file, not a directory"),
    ],
)
def test_argument_errors_are_one_line(tmp_path, capsys, arguments, message):
    torch.save({"state_dict": _official_checkpoint()}, tmp_path / "tiny.pth")
    with pytest.raises(SystemExit) as exit_info:
        main([argument.format(tmp=tmp_path) for argument in arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("segvit-convert: error: ")
    assert message.format(tmp=tmp_path) in error


def test_conversion_failures_are_one_line_unless_debug(tmp_path, capsys):
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": _official_checkpoint()}, path)
    arguments = [str(path), str(tmp_path / "out"), "--preset", "ade20k-vit-b"]  # a 3-stage 64-pixel file: no fit
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("segvit-convert: error: CheckpointConversionError: image_size 512 does not match")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointConversionError):
        main(arguments + ["--debug"])
