// iomux.zmq: ZeroMQ's wire protocol (ZMTP 3.1, NULL mechanism) on iomux sockets.
export {
  Socket, Push, Pull, Dealer, Router, Request, Reply, Publisher, Subscriber, XPublisher, XSubscriber, Req, Rep, Pub, Sub, XPub, XSub,
  type SocketOptions, type RouterOptions, type Message, type MessageLike, type ZmqError,
} from './socket';
export {
  Decoder, ZmtpError, ERRORS, COMPATIBLE, GREETING_SIZE, FLAG_MORE, FLAG_LONG, FLAG_COMMAND,
  encodeGreeting, encodeCommand, encodeReady, encodeError, encodePing, encodePong, encodeSubscription,
  encodeMessage, parseReady,
  type DecoderHandler, type DecoderOptions, type Greeting, type ReadyProperties, type SocketTypeName,
} from './codec';
export { parseEndpoint, type Endpoint } from './endpoint';
