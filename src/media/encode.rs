//! Writing frames and audio into containers with FFmpeg: mp4 (H.264 + AAC), WebM (VP9/AV1),
//! animated WebP and APNG, and audio-only FLAC/MP3/Opus.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use ff::format::{sample, Pixel, Sample};
use ffmpeg_next as ff;
use tch::Tensor;

use super::Audio;

/// How to write a video file.
pub struct VideoSpec {
    /// FFmpeg muxer name: `mp4`, `webm`, `webp`, `apng`.
    pub container: &'static str,
    /// Encoder names to try, in order.
    pub codecs: &'static [&'static str],
    pub pixel: Pixel,
    pub codec_options: Vec<(String, String)>,
    pub muxer_options: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    pub compression: Option<usize>,
    pub bit_rate: Option<usize>,
    /// Chroma-subsampled formats need even sizes; odd ones are scaled down by one pixel.
    pub even_size: bool,
    /// Tag the stream with this color space and convert with its matrix (as SaveVideo does);
    /// untagged streams use swscale's default matrix.
    pub color: Option<ColorSpace>,
    /// Feed the encoder 16-bit RGB (`clip(65535·x)`) instead of 8-bit, for 10-bit output.
    pub sixteen_bit_source: bool,
}

/// SaveVideo's color spaces: SDR BT.709 with the sRGB transfer, or BT.2020 with HLG or PQ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ColorSpace {
    Srgb,
    Hlg,
    Pq,
}

impl ColorSpace {
    /// SaveVideo's `color_space` names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sRGB" => Some(Self::Srgb),
            "HDR" => Some(Self::Hlg),
            "HDR PQ" => Some(Self::Pq),
            _ => None,
        }
    }

    pub fn is_hdr(self) -> bool {
        self != Self::Srgb
    }

    /// (primaries, transfer, matrix) as FFmpeg names them.
    fn tags(
        self,
    ) -> (
        ff::ffi::AVColorPrimaries,
        ff::ffi::AVColorTransferCharacteristic,
        ff::ffi::AVColorSpace,
    ) {
        use ff::ffi::{
            AVColorPrimaries as P, AVColorSpace as S, AVColorTransferCharacteristic as T,
        };
        match self {
            Self::Srgb => (
                P::AVCOL_PRI_BT709,
                T::AVCOL_TRC_IEC61966_2_1,
                S::AVCOL_SPC_BT709,
            ),
            Self::Hlg => (
                P::AVCOL_PRI_BT2020,
                T::AVCOL_TRC_ARIB_STD_B67,
                S::AVCOL_SPC_BT2020_NCL,
            ),
            Self::Pq => (
                P::AVCOL_PRI_BT2020,
                T::AVCOL_TRC_SMPTE2084,
                S::AVCOL_SPC_BT2020_NCL,
            ),
        }
    }
}

impl VideoSpec {
    /// H.264 in yuv420p inside an mp4, as SaveVideo and the video previews write it.
    pub fn h264_mp4(muxer_options: Vec<(String, String)>, metadata: Vec<(String, String)>) -> Self {
        Self {
            container: "mp4",
            codecs: &["libx264", "h264"],
            pixel: Pixel::YUV420P,
            codec_options: vec![],
            muxer_options,
            metadata,
            compression: None,
            bit_rate: None,
            even_size: true,
            color: None,
            sixteen_bit_source: false,
        }
    }
}

/// A frame rate as an exact fraction (fps × 1000 / 1000, reduced).
pub fn rational(fps: f64) -> ff::Rational {
    let num = (fps * 1000.0).round().max(1.0) as i32;
    ff::Rational::new(num, 1000).reduce()
}

fn dictionary(pairs: &[(String, String)]) -> ff::Dictionary<'static> {
    let mut d = ff::Dictionary::new();
    for (k, v) in pairs {
        d.set(k, v);
    }
    d
}

fn find_encoder(names: &[&str]) -> Result<ff::Codec> {
    names
        .iter()
        .find_map(|n| ff::encoder::find_by_name(n))
        .ok_or_else(|| anyhow!("none of the encoders {names:?} is available in this FFmpeg build"))
}

/// Sends every packet the encoder has ready to the muxer. `frame_duration` (encoder time
/// base) fills in packets that come without a duration: the MP4 muxer ends its edit list at the
/// last packet's end, so a zero duration there would hide the last video frame from players.
fn drain(
    enc: &mut ff::encoder::Encoder,
    index: usize,
    enc_tb: ff::Rational,
    octx: &mut ff::format::context::Output,
    frame_duration: Option<i64>,
) -> Result<()> {
    let stream_tb = octx.stream(index).expect("stream exists").time_base();
    let mut packet = ff::Packet::empty();
    while enc.receive_packet(&mut packet).is_ok() {
        // FLAC ends with a side-data-only packet (updated STREAMINFO); the wrapper refuses
        // empty packets and the stream is complete without it.
        if packet.size() == 0 {
            continue;
        }
        if let Some(d) = frame_duration.filter(|_| packet.duration() == 0) {
            packet.set_duration(d);
        }
        packet.set_stream(index);
        packet.rescale_ts(enc_tb, stream_tb);
        packet.write_interleaved(octx).context("muxing a packet")?;
    }
    Ok(())
}

/// One audio stream being encoded alongside (or without) video.
struct AudioTrack {
    enc: ff::encoder::Audio,
    index: usize,
    channels: Vec<Vec<f32>>,
    pos: usize,
    frame_size: usize,
    rate: u32,
    layout: ff::ChannelLayout,
    converter: Option<ff::software::resampling::Context>,
}

impl AudioTrack {
    fn add(
        octx: &mut ff::format::context::Output,
        audio: &Audio,
        codecs: &[&str],
        bit_rate: Option<usize>,
        target_rate: Option<u32>,
        options: &[(String, String)],
    ) -> Result<Self> {
        let global_header = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let codec = find_encoder(codecs)?;
        let formats: Vec<Sample> = codec
            .audio()?
            .formats()
            .map(|f| f.collect())
            .unwrap_or_default();
        let planar_f32 = Sample::F32(sample::Type::Planar);
        let format = if formats.is_empty() || formats.contains(&planar_f32) {
            planar_f32
        } else {
            formats[0]
        };
        let mut channels = audio.channels();
        if channels.is_empty() {
            channels.push(Vec::new());
        }
        let rate = target_rate.unwrap_or(audio.sample_rate);
        if rate != audio.sample_rate {
            channels = resample(&channels, audio.sample_rate, rate)?;
        }
        let layout = ff::ChannelLayout::default(channels.len() as i32);
        let index = octx.add_stream(codec)?.index();
        let mut ctx = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()?;
        ctx.set_rate(rate as i32);
        ctx.set_channel_layout(layout);
        ctx.set_channels(channels.len() as i32);
        ctx.set_format(format);
        ctx.set_time_base(ff::Rational::new(1, rate as i32));
        if let Some(b) = bit_rate {
            ctx.set_bit_rate(b);
        }
        if global_header {
            ctx.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let enc = ctx
            .open_with(dictionary(options))
            .context("opening the audio encoder")?;
        octx.stream_mut(index)
            .expect("stream exists")
            .set_parameters(&enc);
        let frame_size = match enc.frame_size() {
            0 => 4096,
            n => n as usize,
        };
        let converter = (format != planar_f32)
            .then(|| {
                ff::software::resampling::Context::get(
                    planar_f32, layout, rate, format, layout, rate,
                )
            })
            .transpose()?;
        Ok(AudioTrack {
            enc,
            index,
            channels,
            pos: 0,
            frame_size,
            rate,
            layout,
            converter,
        })
    }

    fn total(&self) -> usize {
        self.channels[0].len()
    }

    /// Encodes samples up to `seconds` into the stream.
    fn encode_until(&mut self, seconds: f64, octx: &mut ff::format::context::Output) -> Result<()> {
        let end = ((seconds * self.rate as f64) as usize).min(self.total());
        while self.pos < end {
            let n = self.frame_size.min(self.total() - self.pos);
            let mut frame =
                ff::frame::Audio::new(Sample::F32(sample::Type::Planar), n, self.layout);
            frame.set_rate(self.rate);
            for (c, data) in self.channels.iter().enumerate() {
                frame.plane_mut::<f32>(c)[..n].copy_from_slice(&data[self.pos..self.pos + n]);
            }
            let mut frame = match &mut self.converter {
                Some(conv) => {
                    let mut out = ff::frame::Audio::empty();
                    conv.run(&frame, &mut out)
                        .context("converting audio samples")?;
                    out
                }
                None => frame,
            };
            frame.set_pts(Some(self.pos as i64));
            self.enc.send_frame(&frame).context("encoding audio")?;
            drain(
                &mut self.enc,
                self.index,
                ff::Rational::new(1, self.rate as i32),
                octx,
                None,
            )?;
            self.pos += n;
        }
        Ok(())
    }

    fn finish(mut self, octx: &mut ff::format::context::Output) -> Result<()> {
        self.encode_until(f64::INFINITY, octx)?;
        self.enc.send_eof().context("flushing audio")?;
        drain(
            &mut self.enc,
            self.index,
            ff::Rational::new(1, self.rate as i32),
            octx,
            None,
        )
    }
}

/// Changes the sample rate of planar float audio.
fn resample(channels: &[Vec<f32>], from: u32, to: u32) -> Result<Vec<Vec<f32>>> {
    let fmt = Sample::F32(sample::Type::Planar);
    let layout = ff::ChannelLayout::default(channels.len() as i32);
    let n = channels[0].len();
    let mut ctx = ff::software::resampling::Context::get(fmt, layout, from, fmt, layout, to)?;
    let mut input = ff::frame::Audio::new(fmt, n.max(1), layout);
    input.set_rate(from);
    for (c, data) in channels.iter().enumerate() {
        input.plane_mut::<f32>(c)[..n].copy_from_slice(data);
    }
    let capacity = n * to as usize / from as usize + 1024;
    let mut out = ff::frame::Audio::new(fmt, capacity, layout);
    ctx.run(&input, &mut out)?;
    let mut result: Vec<Vec<f32>> = (0..channels.len())
        .map(|c| out.plane::<f32>(c)[..out.samples()].to_vec())
        .collect();
    loop {
        let mut tail = ff::frame::Audio::new(fmt, 4096, layout);
        if ctx.flush(&mut tail)?.is_none() || tail.samples() == 0 {
            break;
        }
        for (c, r) in result.iter_mut().enumerate() {
            r.extend_from_slice(&tail.plane::<f32>(c)[..tail.samples()]);
        }
    }
    Ok(result)
}

/// One frame as packed 8-bit samples: `(bytes, channels)`, like ComfyUI's `clip(255·x)`.
fn frame_bytes(frame: &Tensor) -> Result<(Vec<u8>, usize)> {
    let frame = match frame.size().last() {
        Some(1) => frame.repeat([1, 1, 3]),
        Some(2) => frame.narrow(-1, 0, 1).repeat([1, 1, 3]),
        _ => frame.shallow_clone(),
    };
    let (bytes, _, _, c) = crate::imageio::to_u8(&frame)?;
    Ok((bytes, c.min(4)))
}

/// One RGB frame as 16-bit little-endian samples, `clip(65535·x)` truncated as upstream does.
fn frame_words(frame: &Tensor) -> Result<Vec<u8>> {
    let words = (frame.narrow(-1, 0, 3).to_kind(tch::Kind::Float) * 65535.0)
        .clamp(0.0, 65535.0)
        .to_kind(tch::Kind::Int)
        .contiguous();
    let values = Vec::<i32>::try_from(words.flatten(0, -1))?;
    Ok(values
        .iter()
        .flat_map(|v| (*v as u16).to_le_bytes())
        .collect())
}

/// Sets the color tags on a codec context or frame, as PyAV's `set_video_color_properties`.
macro_rules! tag_color {
    ($target:expr, $color:expr) => {{
        let (primaries, transfer, matrix) = $color.tags();
        // SAFETY: a live codec context or frame, written before use.
        unsafe {
            let t = $target;
            (*t).color_primaries = primaries;
            (*t).color_trc = transfer;
            (*t).colorspace = matrix;
            (*t).color_range = ff::ffi::AVColorRange::AVCOL_RANGE_MPEG;
        }
    }};
}

/// The RGB → encoder-format converter. A tagged stream converts as PyAV's `reformat` with a
/// destination colorspace: bilinear, that matrix, limited range.
fn new_scaler(
    src_format: Pixel,
    (w, h): (i64, i64),
    spec: &VideoSpec,
    (out_w, out_h): (i64, i64),
) -> Result<ff::software::scaling::Context> {
    use ff::software::scaling::{Context, Flags};
    let flags = if spec.color.is_some() {
        Flags::BILINEAR
    } else {
        Flags::BICUBIC
    };
    let mut scaler = Context::get(
        src_format,
        w as u32,
        h as u32,
        spec.pixel,
        out_w as u32,
        out_h as u32,
        flags,
    )?;
    if let Some(color) = spec.color {
        let matrix = if color.is_hdr() {
            ff::ffi::SWS_CS_BT2020
        } else {
            ff::ffi::SWS_CS_ITU709
        };
        // SAFETY: a live context and FFmpeg's own coefficient tables.
        let status = unsafe {
            ff::ffi::sws_setColorspaceDetails(
                scaler.as_mut_ptr(),
                ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_DEFAULT),
                0,
                ff::ffi::sws_getCoefficients(matrix),
                0,
                0,
                1 << 16,
                1 << 16,
            )
        };
        if status < 0 {
            return Err(anyhow!("swscale refused the {color:?} conversion"));
        }
    }
    Ok(scaler)
}

/// Encodes `[N, H, W, C]` frames (and optional audio) into `path`.
pub fn write_video(
    path: &Path,
    frames: &Tensor,
    fps: f64,
    audio: Option<&Audio>,
    spec: &VideoSpec,
    progress: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    ff::init()?;
    let size = frames.size();
    let [n, h, w, _] = size[..] else {
        return Err(anyhow!("frames must have shape [N, H, W, C], got {size:?}"));
    };
    let (out_w, out_h) = if spec.even_size {
        (w & !1, h & !1)
    } else {
        (w, h)
    };
    if n == 0 || out_w == 0 || out_h == 0 {
        return Err(anyhow!("cannot encode {n} frames of {w}x{h}"));
    }
    let rate = rational(fps);
    let enc_tb = rate.invert();
    let mut octx = ff::format::output_as(path, spec.container)
        .with_context(|| format!("creating {}", path.display()))?;
    let global_header = octx
        .format()
        .flags()
        .contains(ff::format::Flags::GLOBAL_HEADER);
    let codec = find_encoder(spec.codecs)?;
    let vindex = octx.add_stream(codec)?.index();
    let mut ctx = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    ctx.set_width(out_w as u32);
    ctx.set_height(out_h as u32);
    ctx.set_format(spec.pixel);
    ctx.set_time_base(enc_tb);
    ctx.set_frame_rate(Some(rate));
    if let Some(b) = spec.bit_rate {
        ctx.set_bit_rate(b);
    }
    if spec.compression.is_some() {
        ctx.set_compression(spec.compression);
    }
    if global_header {
        ctx.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    }
    if let Some(color) = spec.color {
        tag_color!(ctx.as_mut_ptr(), color);
    }
    let mut venc = ctx
        .open_with(dictionary(&spec.codec_options))
        .context("opening the video encoder")?;
    {
        let mut stream = octx.stream_mut(vindex).expect("stream exists");
        stream.set_parameters(&venc);
        stream.set_time_base(enc_tb);
    }
    // WebM carries Opus at 48 kHz; the other containers AAC at the source rate.
    let (audio_codecs, audio_rate): (&[&str], _) = if spec.container == "webm" {
        (&["libopus", "opus"], Some(48_000))
    } else {
        (&["aac"], None)
    };
    let mut track = match audio {
        Some(a) => Some(AudioTrack::add(
            &mut octx,
            a,
            audio_codecs,
            None,
            audio_rate,
            &[],
        )?),
        None => None,
    };
    octx.set_metadata(dictionary(&spec.metadata));
    octx.write_header_with(dictionary(&spec.muxer_options))?;

    let frames = frames.to_device(tch::Device::Cpu);
    let mut scaler: Option<ff::software::scaling::Context> = None;
    for i in 0..n {
        progress(i as u64, n as u64)?;
        let (bytes, channels, src_format) = if spec.sixteen_bit_source {
            (frame_words(&frames.get(i))?, 6, Pixel::RGB48LE)
        } else {
            let (bytes, channels) = frame_bytes(&frames.get(i))?;
            let format = if channels == 4 {
                Pixel::RGBA
            } else {
                Pixel::RGB24
            };
            (bytes, channels, format)
        };
        let scaler = match &mut scaler {
            Some(s) => s,
            None => scaler.insert(new_scaler(src_format, (w, h), spec, (out_w, out_h))?),
        };
        let mut src = ff::frame::Video::new(src_format, w as u32, h as u32);
        let stride = src.stride(0);
        let row = w as usize * channels;
        for y in 0..h as usize {
            src.data_mut(0)[y * stride..y * stride + row]
                .copy_from_slice(&bytes[y * row..(y + 1) * row]);
        }
        let mut dst = ff::frame::Video::empty();
        scaler.run(&src, &mut dst)?;
        if let Some(color) = spec.color {
            tag_color!(dst.as_mut_ptr(), color);
        }
        dst.set_pts(Some(i));
        venc.send_frame(&dst)?;
        drain(&mut venc, vindex, enc_tb, &mut octx, Some(1))?;
        if let Some(t) = track.as_mut() {
            t.encode_until((i + 1) as f64 / fps, &mut octx)?;
        }
    }
    venc.send_eof()?;
    drain(&mut venc, vindex, enc_tb, &mut octx, Some(1))?;
    if let Some(t) = track {
        t.finish(&mut octx)?;
    }
    octx.write_trailer()?;
    progress(n as u64, n as u64)
}

/// How to write an audio-only file.
pub struct AudioSpec {
    /// FFmpeg muxer name: `flac`, `mp3`, `ogg`.
    pub container: &'static str,
    pub codecs: &'static [&'static str],
    pub bit_rate: Option<usize>,
    pub codec_options: Vec<(String, String)>,
    /// Resample to this rate first (Opus wants 48 kHz).
    pub sample_rate: Option<u32>,
    pub metadata: Vec<(String, String)>,
}

/// Writes audio alone.
pub fn write_audio(path: &Path, audio: &Audio, spec: &AudioSpec) -> Result<()> {
    ff::init()?;
    let mut octx = ff::format::output_as(path, spec.container)
        .with_context(|| format!("creating {}", path.display()))?;
    let track = AudioTrack::add(
        &mut octx,
        audio,
        spec.codecs,
        spec.bit_rate,
        spec.sample_rate,
        &spec.codec_options,
    )
    .context("adding the audio stream")?;
    octx.set_metadata(dictionary(&spec.metadata));
    octx.write_header().context("writing the header")?;
    track.finish(&mut octx)?;
    octx.write_trailer().context("writing the trailer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, seconds: f64) -> Audio {
        let n = (rate as f64 * seconds) as i64;
        let t = Tensor::arange(n, (tch::Kind::Float, tch::Device::Cpu)) / rate as f64;
        let left = (t.shallow_clone() * (2.0 * std::f64::consts::PI * 440.0)).sin() * 0.5;
        let right = (t * (2.0 * std::f64::consts::PI * 220.0)).sin() * 0.25;
        Audio::new(Tensor::stack(&[left, right], 0).unsqueeze(0), rate)
    }

    #[test]
    fn flac_round_trip_is_lossless_to_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.flac");
        let audio = sine(44_100, 0.5);
        let spec = AudioSpec {
            container: "flac",
            codecs: &["flac"],
            bit_rate: None,
            codec_options: vec![],
            sample_rate: None,
            metadata: vec![("prompt".into(), "{}".into())],
        };
        write_audio(&path, &audio, &spec).unwrap();
        let back = super::super::decode::read(&path, false)
            .unwrap()
            .audio
            .unwrap();
        assert_eq!(back.sample_rate, 44_100);
        let (a, b) = (audio.channels(), back.channels());
        assert_eq!(b.len(), 2);
        assert_eq!(a[0].len(), b[0].len());
        let max_err = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
            .fold(0f32, f32::max);
        assert!(max_err <= 1.0 / 32768.0 + 1e-6, "max error {max_err}");
    }
}
