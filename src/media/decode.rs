//! Reading video frames and audio from files with FFmpeg.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use ff::format::{sample, Pixel, Sample};
use ff::media::Type;
use ffmpeg_next as ff;
use tch::Tensor;

use super::Audio;

/// What a media file holds: frames `[N, H, W, 3]` in 0..1 with their rate, their alpha
/// `[N, H, W, 1]` where the stream has one, and audio.
pub struct Decoded {
    pub frames: Option<(Tensor, f64)>,
    pub alpha: Option<Tensor>,
    pub audio: Option<Audio>,
    /// The video stream's depth (its pixel format's widest component; 8 without video).
    pub bit_depth: u32,
    /// `sRGB`, `HDR` or `HDR PQ` by the video stream's transfer; none when unrecognised.
    pub color_space: Option<String>,
}

/// FFmpeg's description of a pixel format (components, planes, flags); none for an unknown one.
pub(super) fn pixel_descriptor(format: Pixel) -> Option<&'static ff::ffi::AVPixFmtDescriptor> {
    // SAFETY: FFmpeg's static descriptor table, which lives as long as the process; null for
    // an unknown format.
    unsafe { ff::ffi::av_pix_fmt_desc_get(format.into()).as_ref() }
}

/// Upstream's `video_stream_bit_depth`: the pixel format's widest component.
fn bit_depth(format: Pixel) -> u32 {
    pixel_descriptor(format)
        .and_then(|d| {
            let components = &d.comp[..d.nb_components as usize];
            components.iter().map(|c| c.depth as u32).max()
        })
        .unwrap_or(8)
}

/// Upstream's `VIDEO_TRANSFER_COLOR_SPACES`.
fn color_space(transfer: ff::color::TransferCharacteristic) -> Option<String> {
    use ff::color::TransferCharacteristic as T;
    match transfer {
        T::BT709 | T::IEC61966_2_1 => Some("sRGB".into()),
        T::ARIB_STD_B67 => Some("HDR".into()),
        T::SMPTE2084 => Some("HDR PQ".into()),
        _ => None,
    }
}

struct VideoTrack {
    index: usize,
    decoder: ff::decoder::Video,
    scaler: Option<ff::software::scaling::Context>,
    /// The pixel format frames are converted to, chosen at the first frame.
    target: Pixel,
    fps: f64,
    rgb: Vec<f32>,
    alpha: Vec<f32>,
    count: i64,
    size: (u32, u32),
}

/// Upstream's choice (`VideoFromFile.get_components`): JPEG-range YUV and 8-bit RGB sources
/// convert to 8-bit RGB(A) (swscale gives the same bytes as PyAV), everything else to float RGB;
/// alpha wherever the source has it (or a palette). Planar YUV converts in `yuv`; the other
/// float sources through 16-bit RGB(A) here, as Debian's swscale has no sound float output.
fn target_format(source: Pixel) -> Pixel {
    let alpha = source == Pixel::PAL8
        || pixel_descriptor(source)
            .is_some_and(|d| d.flags & ff::ffi::AV_PIX_FMT_FLAG_ALPHA as u64 != 0);
    let eight_bit = matches!(
        source,
        Pixel::YUVJ420P
            | Pixel::YUVJ422P
            | Pixel::YUVJ444P
            | Pixel::RGB24
            | Pixel::RGBA
            | Pixel::PAL8
    );
    match (eight_bit, alpha) {
        (true, false) => Pixel::RGB24,
        (true, true) => Pixel::RGBA,
        (false, false) => Pixel::RGB48LE,
        (false, true) => Pixel::RGBA64LE,
    }
}

/// 8-bit greyscale (and grey + alpha) as upstream's float conversion gives it: FFmpeg 8 widens
/// the samples by a shift, so v reads as 256·v / 65535 (white is 0.9961).
fn grey_as_upstream(frame: &ff::frame::Video) -> Option<(Tensor, Option<Tensor>)> {
    let channels = match frame.format() {
        Pixel::GRAY8 => 1,
        Pixel::YA8 => 2,
        _ => return None,
    };
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let mut samples = Vec::with_capacity(w * h * channels);
    for y in 0..h {
        let row = &frame.data(0)[y * stride..y * stride + w * channels];
        samples.extend(row.iter().map(|&v| (f32::from(v) * 256.0) / 65535.0));
    }
    let t = Tensor::from_slice(&samples).view([h as i64, w as i64, channels as i64]);
    let grey = t.narrow(2, 0, 1).expand([-1, -1, 3], false).contiguous();
    Some((
        grey,
        (channels == 2).then(|| t.narrow(2, 1, 1).contiguous()),
    ))
}

/// The converter of decoded frames to `target`, reading YUV with the matrix and range the
/// stream is tagged with (as PyAV's conversion does), swscale's default matrix when untagged.
fn to_rgb(frame: &ff::frame::Video, target: Pixel) -> Result<ff::software::scaling::Context> {
    let (w, h) = (frame.width(), frame.height());
    let mut scaler = ff::software::scaling::Context::get(
        frame.format(),
        w,
        h,
        target,
        w,
        h,
        ff::software::scaling::Flags::BILINEAR,
    )?;
    use ff::color::Space;
    let matrix = match frame.color_space() {
        Space::BT709 => ff::ffi::SWS_CS_ITU709,
        Space::BT2020NCL | Space::BT2020CL => ff::ffi::SWS_CS_BT2020,
        Space::FCC => ff::ffi::SWS_CS_FCC,
        Space::SMPTE240M => ff::ffi::SWS_CS_SMPTE240M,
        _ => ff::ffi::SWS_CS_DEFAULT,
    };
    let full_range = frame.color_range() == ff::color::Range::JPEG;
    // SAFETY: a live context and FFmpeg's own coefficient tables.
    unsafe {
        ff::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            ff::ffi::sws_getCoefficients(matrix),
            full_range as i32,
            ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_DEFAULT),
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
    Ok(scaler)
}

impl VideoTrack {
    fn take_frames(&mut self) -> Result<()> {
        let mut frame = ff::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let (w, h) = (frame.width(), frame.height());
            if self.count == 0 {
                self.size = (w, h);
            }
            if (w, h) != self.size {
                continue;
            }
            if self.count == 0 {
                self.target = target_format(frame.format());
            }
            let float = !matches!(self.target, Pixel::RGB24 | Pixel::RGBA);
            let own = || super::yuv::to_float_rgb(&frame).or_else(|| grey_as_upstream(&frame));
            if let Some((rgb, alpha)) = float.then(own).flatten() {
                self.rgb.extend(Vec::<f32>::try_from(rgb.flatten(0, -1))?);
                if let Some(alpha) = alpha {
                    self.alpha
                        .extend(Vec::<f32>::try_from(alpha.flatten(0, -1))?);
                }
                self.count += 1;
                continue;
            }
            let scaler = match &mut self.scaler {
                Some(s) => s,
                None => self.scaler.insert(to_rgb(&frame, self.target)?),
            };
            let mut out = ff::frame::Video::empty();
            scaler.run(&frame, &mut out)?;
            let (w, h) = (w as usize, h as usize);
            let alpha = matches!(self.target, Pixel::RGBA | Pixel::RGBA64LE);
            let channels = if alpha { 4 } else { 3 };
            // Bytes of 255ths, or little-endian words of 65535ths.
            let (width, max) = if float { (2, 65535.0) } else { (1, 255.0) };
            let stride = out.stride(0);
            for y in 0..h {
                let row = &out.data(0)[y * stride..y * stride + w * channels * width];
                let samples: Vec<f32> = if float {
                    row.chunks_exact(2)
                        .map(|b| f32::from(u16::from_le_bytes([b[0], b[1]])) / max)
                        .collect()
                } else {
                    row.iter().map(|&b| f32::from(b) / max).collect()
                };
                for px in samples.chunks_exact(channels) {
                    self.rgb.extend_from_slice(&px[..3]);
                    if alpha {
                        self.alpha.push(px[3]);
                    }
                }
            }
            self.count += 1;
        }
        Ok(())
    }
}

struct AudioTrack {
    index: usize,
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    channels: Vec<Vec<f32>>,
    rate: u32,
}

impl AudioTrack {
    fn take_samples(&mut self) -> Result<()> {
        let mut frame = ff::frame::Audio::empty();
        let planar = Sample::F32(sample::Type::Planar);
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let n_channels = frame.channels() as usize;
            let mut layout = frame.channel_layout();
            if layout.is_empty() {
                layout = ff::ChannelLayout::default(n_channels as i32);
                frame.set_channel_layout(layout);
            }
            self.rate = frame.rate();
            let converted;
            let data = if frame.format() == planar {
                &frame
            } else {
                let conv = match &mut self.resampler {
                    Some(r) => r,
                    None => self
                        .resampler
                        .insert(ff::software::resampling::Context::get(
                            frame.format(),
                            layout,
                            frame.rate(),
                            planar,
                            layout,
                            frame.rate(),
                        )?),
                };
                let mut out = ff::frame::Audio::new(planar, frame.samples(), layout);
                conv.run(&frame, &mut out)?;
                converted = out;
                &converted
            };
            if self.channels.len() < n_channels {
                self.channels.resize(n_channels, Vec::new());
            }
            for (c, ch) in self.channels.iter_mut().enumerate().take(n_channels) {
                ch.extend_from_slice(&data.plane::<f32>(c)[..data.samples()]);
            }
        }
        Ok(())
    }
}

/// Decodes a file's best video stream (when `video`) and best audio stream.
pub fn read(path: &Path, video: bool) -> Result<Decoded> {
    ff::init()?;
    let mut input =
        ff::format::input(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut format = (8, None);
    let mut vtrack = match input.streams().best(Type::Video).filter(|_| video) {
        Some(stream) => {
            let decoder = ff::codec::context::Context::from_parameters(stream.parameters())?
                .decoder()
                .video()?;
            format = (
                bit_depth(decoder.format()),
                color_space(decoder.color_transfer_characteristic()),
            );
            let rate = stream.avg_frame_rate();
            let rate = if rate.denominator() != 0 && rate.numerator() != 0 {
                rate
            } else {
                stream.rate()
            };
            let fps = rate.numerator() as f64 / rate.denominator().max(1) as f64;
            Some(VideoTrack {
                index: stream.index(),
                decoder,
                scaler: None,
                target: Pixel::RGB24,
                fps,
                rgb: Vec::new(),
                alpha: Vec::new(),
                count: 0,
                size: (0, 0),
            })
        }
        None => None,
    };
    let mut atrack = match input.streams().best(Type::Audio) {
        Some(stream) => {
            let decoder = ff::codec::context::Context::from_parameters(stream.parameters())?
                .decoder()
                .audio()?;
            Some(AudioTrack {
                index: stream.index(),
                decoder,
                resampler: None,
                channels: Vec::new(),
                rate: 0,
            })
        }
        None => None,
    };
    if vtrack.is_none() && atrack.is_none() {
        return Err(anyhow!(
            "{} has no {} stream",
            path.display(),
            if video { "video or audio" } else { "audio" }
        ));
    }
    for (stream, packet) in input.packets() {
        if let Some(v) = vtrack.as_mut().filter(|v| v.index == stream.index()) {
            v.decoder
                .send_packet(&packet)
                .with_context(|| format!("decoding {}", path.display()))?;
            v.take_frames()?;
        } else if let Some(a) = atrack.as_mut().filter(|a| a.index == stream.index()) {
            a.decoder
                .send_packet(&packet)
                .with_context(|| format!("decoding {}", path.display()))?;
            a.take_samples()?;
        }
    }
    if let Some(v) = vtrack.as_mut() {
        v.decoder.send_eof()?;
        v.take_frames()?;
    }
    if let Some(a) = atrack.as_mut() {
        a.decoder.send_eof()?;
        a.take_samples()?;
    }
    let mut alpha = None;
    let frames = match vtrack {
        Some(v) if v.count > 0 => {
            let (w, h) = (v.size.0 as i64, v.size.1 as i64);
            if !v.alpha.is_empty() {
                alpha = Some(Tensor::from_slice(&v.alpha).view([v.count, h, w, 1]));
            }
            Some((Tensor::from_slice(&v.rgb).view([v.count, h, w, 3]), v.fps))
        }
        Some(_) => {
            return Err(anyhow!(
                "{} has a video stream without decodable frames",
                path.display()
            ))
        }
        None => None,
    };
    let audio = atrack.filter(|a| !a.channels.is_empty()).map(|a| {
        let len = a.channels.iter().map(Vec::len).min().unwrap_or(0);
        let flat: Vec<f32> = a
            .channels
            .iter()
            .flat_map(|c| c[..len].iter().copied())
            .collect();
        Audio::new(
            Tensor::from_slice(&flat).view([1, a.channels.len() as i64, len as i64]),
            a.rate,
        )
    });
    Ok(Decoded {
        frames,
        alpha,
        audio,
        bit_depth: format.0,
        color_space: format.1,
    })
}
